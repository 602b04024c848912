package stack

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes"
	appsv1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/apps/v1"
	corev1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/core/v1"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	rbacv1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/rbac/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	k8srbac "k8s.io/api/rbac/v1"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// RouterArgs is what the shared router component needs from a target.
type RouterArgs struct {
	// Kubeconfig of the cluster; every Kubernetes resource goes through an
	// explicit provider built from it, never the ambient ~/.kube/config.
	Kubeconfig pulumi.StringInput
	// Context selects a kubeconfig context; empty means its current one.
	Context    string
	Namespace  string
	RouterPort int
	// NodePort exposes the router on every node (kind, existing); zero makes
	// a LoadBalancer Service on RouterPort instead (GKE).
	NodePort int
	// Image is the router's image; Catalog's entries are already rewritten
	// to the images the cluster can run.
	Image        string
	Catalog      *conf.Catalog
	NodeSelector map[string]string
	NodeAddress  string
	// NodeAddressType is the node address instances are reached at when
	// NodeAddress is empty: "" (the router's default, InternalIP) or
	// "ExternalIP" (GKE: clients outside the VPC).
	NodeAddressType string
	// PMClients are the networks each PM's NetworkPolicy admits besides the
	// router (the clients at the node ports: GKE's source ranges).
	PMClients []string
	// LoadBalancerSourceRanges limit who reaches the router's LoadBalancer
	// (without them the cloud opens it to everyone).
	LoadBalancerSourceRanges []string
	// Images, when set, are the references the router and the catalog's
	// services run, by service name, known once pushed (GKE: the registry's
	// repo@sha256 digests); they replace Image and the catalog's images.
	Images       pulumi.StringMapInput
	HostPathDir  string
	StorageClass string
	// ImageByID makes the router run pinned images by ID (nodes that hold
	// our images already); PullPolicy is the pods' image pull policy.
	ImageByID  bool
	PullPolicy string
	// HostNetwork runs the router in the node's network namespace, with
	// APIServer ("host:port") replacing the in-cluster service address: for
	// clusters whose API server listens on the node's loopback only (the
	// local cluster of `upc cluster up`).
	HostNetwork bool
	APIServer   string
	// AdminToken is the router's admin credential: kept in a Secret mounted
	// read-only at AdminTokenPath, never in the ConfigMap.
	AdminToken string
	// CACert and CAKey are the stack's CA, PEM: kept in a Secret of their
	// own mounted read-only at CADir. The router issues its own serving
	// certificate from it at start (for RouterTLSHosts) and one for every
	// instance it launches; clients verify both against CACert.
	CACert string
	CAKey  string
	// URLHost is the host of the router URL: with a NodePort a node's
	// address, with a LoadBalancer the balancer's (reserved) address. It is
	// among the names on the router's certificate. Required.
	URLHost pulumi.StringInput
}

// Router is the router deployment shared by every target.
type Router struct {
	pulumi.ResourceState

	Namespace pulumi.StringOutput `pulumi:"namespace"`
	URL       pulumi.StringOutput `pulumi:"url"`
	// AdminToken is the admin credential the router accepts (a secret).
	AdminToken pulumi.StringOutput `pulumi:"adminToken"`
	// CACert is the CA certificate (PEM) the router's and the instances'
	// certificates chain to: what clients verify them with.
	CACert pulumi.StringOutput `pulumi:"caCert"`
}

// Names of the router's objects.
const (
	RouterName    = "upc-router"
	configMapName = "upc-router-config"
	configDir     = "/etc/upc"
	// The admin token's Secret, mounted read-only at SecretDir.
	SecretName     = "upc-router-admin-token"
	SecretDir      = "/etc/upc-secret"
	AdminTokenKey  = "admin-token"
	AdminTokenPath = SecretDir + "/" + AdminTokenKey
	// StateDir is a writable emptyDir for the router's users file: the
	// identities made through the API last as long as the pod (a new pod
	// starts with the admin token alone).
	StateDir  = "/var/lib/upc"
	UsersPath = StateDir + "/users.json"
	// routerUID runs the router; its group owns the mounted Secret's file.
	routerUID = 65532
	// AdminTokenHashAnnotation on the pod template rolls the router when
	// the token changes (it reads the file at start).
	AdminTokenHashAnnotation = "upc.admin-token-sha256"
	// The stack's CA: a Secret of its own (certificate and key), mounted
	// read-only at CADir. The certificate is also the router's
	// certificate_bundle_path, the CAs it and its instances trust.
	CASecretName = "upc-router-ca"
	CADir        = "/etc/upc-ca"
	CACertKey    = "ca.crt"
	CAKeyKey     = "ca.key"
	CACertPath   = CADir + "/" + CACertKey
	CAKeyPath    = CADir + "/" + CAKeyKey
	// CAHashAnnotation rolls the router when the CA changes (it reads the
	// CA and issues its own certificate at start); ConfigHashAnnotation
	// when its configuration or catalog does (e.g. tls_hosts).
	CAHashAnnotation     = "upc.ca-sha256"
	ConfigHashAnnotation = "upc.config-sha256"
)

// routerLabels select the router's pods; upc.component keeps them apart from
// the instances (upc.managed) the router makes in the same namespace.
var routerLabels = map[string]string{"app.kubernetes.io/name": RouterName, "upc.component": "router"}

// RouterConfig is the router's configuration file in the ConfigMap: the
// kubernetes mode, its port, the catalog next to it, where its identities
// are (router.admin_token_file, the mounted Secret; router.users_file, on
// the writable emptyDir), TLS on every hop from the mounted CA (the router
// serves HTTPS with a certificate it issues itself for router.tls_hosts,
// RouterTLSHosts of urlHost, and gives each instance one) and the
// backend's settings (conf.Config's "kubernetes" section). No kubeconfig:
// the router uses its pod's ServiceAccount. No token or key either: only
// the Secrets hold them.
func RouterConfig(a RouterArgs, urlHost string) ([]byte, error) {
	c := conf.Default()
	c.UPCMode = conf.ModeKubernetes
	c.ServiceRouterPort = a.RouterPort
	if urlHost != "" {
		c.ServiceRouterIP = urlHost
	}
	c.ServiceRouterUseTLS = true
	c.CertificateBundlePath = CACertPath
	c.Catalog = "catalog.json"
	c.Router.Listen = fmt.Sprintf(":%d", a.RouterPort)
	c.Router.CACertPath = CACertPath
	c.Router.CAKeyPath = CAKeyPath
	c.Router.TLSHosts = RouterTLSHosts(a.Namespace, urlHost)
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode router config: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("encode router config: %w", err)
	}
	m["kubernetes"] = RouterBackend(a)
	// Set on the decoded map: the keys are conf.Router's (issue 14), written
	// here whether or not this tree's conf has them yet.
	router, _ := m["router"].(map[string]any)
	if router == nil {
		router = map[string]any{}
	}
	router["admin_token_file"] = AdminTokenPath
	router["users_file"] = UsersPath
	m["router"] = router
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode router config: %w", err)
	}
	return out, nil
}

// RouterTLSHosts are the names on the router's own certificate: its
// Service's DNS names in the cluster (the first, <name>.<namespace>.svc, is
// the certificate's common name) and urlHost, the router URL's host.
func RouterTLSHosts(namespace, urlHost string) []string {
	svc := RouterName + "." + namespace
	hosts := []string{svc + ".svc", svc + ".svc.cluster.local", svc, RouterName}
	if urlHost != "" && !slices.Contains(hosts, urlHost) {
		hosts = append(hosts, urlHost)
	}
	return hosts
}

// RouterBackend is the config's "kubernetes" section: where the router
// makes instances and how their addresses and claims are formed.
func RouterBackend(a RouterArgs) map[string]any {
	k := map[string]any{"namespace": a.Namespace, "grace_period": "1s"}
	if len(a.NodeSelector) > 0 {
		k["node_selector"] = a.NodeSelector
	}
	if a.NodeAddress != "" {
		k["node_address"] = a.NodeAddress
	} else if a.NodeAddressType != "" {
		k["node_address_type"] = a.NodeAddressType
	}
	if len(a.PMClients) > 0 {
		k["pm_clients"] = a.PMClients
	}
	if a.StorageClass != "" {
		k["storage_class"] = a.StorageClass
	} else if a.HostPathDir != "" {
		k["host_path_dir"] = a.HostPathDir
	}
	if a.ImageByID {
		k["image_by_id"] = true
	}
	return k
}

// RouterEnv is the router's environment beyond its config file.
func RouterEnv(a RouterArgs) map[string]string {
	env := map[string]string{}
	if a.APIServer != "" {
		host, port, _ := strings.Cut(a.APIServer, ":")
		env["KUBERNETES_SERVICE_HOST"] = host
		env["KUBERNETES_SERVICE_PORT"] = port
	}
	return env
}

// RouterRules are the Role's rules: those of the router's own RBAC manifest
// (router/kubernetes/rbac.yaml), only what the kubernetes backend does to
// pods, services and claims in its namespace.
func RouterRules() []rbacv1.PolicyRuleArgs {
	role, _, err := upck8s.Rules()
	if err != nil {
		panic(err) // the embedded manifest is checked by router/kubernetes's tests
	}
	return ruleArgs(role)
}

// RouterClusterRules are the manifest's cluster-scoped rules: reading a
// node's InternalIP for instance addresses, and, where claims bind to
// hostPath volumes the backend makes (hostPath), those volumes.
func RouterClusterRules(hostPath bool) []rbacv1.PolicyRuleArgs {
	_, cluster, err := upck8s.Rules()
	if err != nil {
		panic(err)
	}
	if !hostPath {
		cluster = slices.DeleteFunc(cluster, func(r k8srbac.PolicyRule) bool {
			return slices.Contains(r.Resources, "persistentvolumes")
		})
	}
	return ruleArgs(cluster)
}

func ruleArgs(rules []k8srbac.PolicyRule) []rbacv1.PolicyRuleArgs {
	out := make([]rbacv1.PolicyRuleArgs, 0, len(rules))
	for _, r := range rules {
		out = append(out, rbacv1.PolicyRuleArgs{
			ApiGroups: pulumi.ToStringArray(r.APIGroups),
			Resources: pulumi.ToStringArray(r.Resources),
			Verbs:     pulumi.ToStringArray(r.Verbs),
		})
	}
	return out
}

// NewRouter deploys the router into the cluster named by args.Kubeconfig.
func NewRouter(ctx *pulumi.Context, name string, a RouterArgs, opts ...pulumi.ResourceOption) (*Router, error) {
	r := &Router{}
	if err := ctx.RegisterComponentResource("upc:index:Router", name, r, opts...); err != nil {
		return nil, fmt.Errorf("register router: %w", err)
	}
	provArgs := &kubernetes.ProviderArgs{
		Kubeconfig: a.Kubeconfig.ToStringOutput(),
		// Our objects are few: server-side apply's field managers add nothing
		// but a dependency on the API server's version here.
		EnableServerSideApply: pulumi.BoolPtr(false),
	}
	if a.Context != "" {
		provArgs.Context = pulumi.StringPtr(a.Context)
	}
	prov, err := kubernetes.NewProvider(ctx, name+"-k8s", provArgs, pulumi.Parent(r))
	if err != nil {
		return nil, fmt.Errorf("kubernetes provider: %w", err)
	}
	in := []pulumi.ResourceOption{pulumi.Parent(r), pulumi.Provider(prov)}

	ns, err := corev1.NewNamespace(ctx, name+"-ns", &corev1.NamespaceArgs{
		Metadata: &metav1.ObjectMetaArgs{Name: pulumi.String(a.Namespace), Labels: pulumi.StringMap{"upc.component": pulumi.String("namespace")}},
	}, in...)
	if err != nil {
		return nil, fmt.Errorf("namespace: %w", err)
	}
	nsName := ns.Metadata.Name().Elem()
	meta := func(n string) *metav1.ObjectMetaArgs {
		return &metav1.ObjectMetaArgs{Name: pulumi.String(n), Namespace: nsName, Labels: toStringMap(routerLabels)}
	}

	sa, err := corev1.NewServiceAccount(ctx, name+"-sa", &corev1.ServiceAccountArgs{Metadata: meta(RouterName)}, in...)
	if err != nil {
		return nil, fmt.Errorf("service account: %w", err)
	}
	role, err := rbacv1.NewRole(ctx, name+"-role", &rbacv1.RoleArgs{
		Metadata: meta(RouterName),
		Rules:    policyRules(RouterRules()),
	}, in...)
	if err != nil {
		return nil, fmt.Errorf("role: %w", err)
	}
	subjects := rbacv1.SubjectArray{rbacv1.SubjectArgs{
		Kind: pulumi.String("ServiceAccount"), Name: sa.Metadata.Name().Elem(), Namespace: nsName,
	}}
	rb, err := rbacv1.NewRoleBinding(ctx, name+"-rolebinding", &rbacv1.RoleBindingArgs{
		Metadata: meta(RouterName),
		RoleRef: rbacv1.RoleRefArgs{
			ApiGroup: pulumi.String("rbac.authorization.k8s.io"), Kind: pulumi.String("Role"), Name: role.Metadata.Name().Elem(),
		},
		Subjects: subjects,
	}, in...)
	if err != nil {
		return nil, fmt.Errorf("role binding: %w", err)
	}
	// Cluster-scoped names carry the namespace so two deployments coexist.
	crName := RouterName + "-" + a.Namespace
	cr, err := rbacv1.NewClusterRole(ctx, name+"-clusterrole", &rbacv1.ClusterRoleArgs{
		Metadata: &metav1.ObjectMetaArgs{Name: pulumi.String(crName), Labels: toStringMap(routerLabels)},
		Rules:    policyRules(RouterClusterRules(a.HostPathDir != "")),
	}, in...)
	if err != nil {
		return nil, fmt.Errorf("cluster role: %w", err)
	}
	crb, err := rbacv1.NewClusterRoleBinding(ctx, name+"-clusterrolebinding", &rbacv1.ClusterRoleBindingArgs{
		Metadata: &metav1.ObjectMetaArgs{Name: pulumi.String(crName), Labels: toStringMap(routerLabels)},
		RoleRef: rbacv1.RoleRefArgs{
			ApiGroup: pulumi.String("rbac.authorization.k8s.io"), Kind: pulumi.String("ClusterRole"), Name: cr.Metadata.Name().Elem(),
		},
		Subjects: subjects,
	}, in...)
	if err != nil {
		return nil, fmt.Errorf("cluster role binding: %w", err)
	}

	if a.URLHost == nil {
		return nil, errors.New("router: URLHost is required (the router's certificate names it)")
	}
	// Checked here, where no output can hide the error: the config is made
	// again, with the URL's host, once that is known.
	if _, err := RouterConfig(a, ""); err != nil {
		return nil, err
	}
	catalog, err := catalogJSON(a.Catalog, nil)
	if err != nil {
		return nil, err
	}
	catalogOut := pulumi.String(catalog).ToStringOutput()
	image := pulumi.String(a.Image).ToStringOutput()
	if a.Images != nil {
		refs := a.Images.ToStringMapOutput()
		catalogOut = refs.ApplyT(func(m map[string]string) (string, error) {
			return catalogJSON(a.Catalog, m)
		}).(pulumi.StringOutput)
		image = refs.MapIndex(pulumi.String("router"))
	}
	routerConf := a.URLHost.ToStringOutput().ApplyT(func(host string) (string, error) {
		b, err := RouterConfig(a, host)
		return string(b), err
	}).(pulumi.StringOutput)
	configHash := pulumi.All(routerConf, catalogOut).ApplyT(func(v []any) string {
		return sha256Hex(v[0].(string) + "\x00" + v[1].(string))
	}).(pulumi.StringOutput)
	cm, err := corev1.NewConfigMap(ctx, name+"-config", &corev1.ConfigMapArgs{
		Metadata: meta(configMapName),
		Data: pulumi.StringMap{
			"upc.json":     routerConf,
			"catalog.json": catalogOut,
		},
	}, in...)
	if err != nil {
		return nil, fmt.Errorf("config map: %w", err)
	}

	token := pulumi.ToSecret(pulumi.String(a.AdminToken)).(pulumi.StringOutput)
	tokenSecret, err := corev1.NewSecret(ctx, name+"-admin-token", &corev1.SecretArgs{
		Metadata:   meta(SecretName),
		Type:       pulumi.String("Opaque"),
		StringData: pulumi.StringMap{AdminTokenKey: token},
	}, append(in, pulumi.AdditionalSecretOutputs([]string{"data", "stringData"}))...)
	if err != nil {
		return nil, fmt.Errorf("admin token secret: %w", err)
	}
	caSecret, err := corev1.NewSecret(ctx, name+"-ca", &corev1.SecretArgs{
		Metadata: meta(CASecretName),
		Type:     pulumi.String("Opaque"),
		StringData: pulumi.StringMap{
			CACertKey: pulumi.String(a.CACert),
			CAKeyKey:  pulumi.ToSecret(pulumi.String(a.CAKey)).(pulumi.StringOutput),
		},
	}, append(in, pulumi.AdditionalSecretOutputs([]string{"data", "stringData"}))...)
	if err != nil {
		return nil, fmt.Errorf("CA secret: %w", err)
	}

	env := corev1.EnvVarArray{}
	renv := RouterEnv(a)
	for _, k := range slices.Sorted(maps.Keys(renv)) {
		env = append(env, corev1.EnvVarArgs{Name: pulumi.String(k), Value: pulumi.String(renv[k])})
	}
	podLabels := toStringMap(routerLabels)
	container := corev1.ContainerArgs{
		Name:            pulumi.String("router"),
		Image:           image,
		ImagePullPolicy: pulumi.String(a.PullPolicy),
		Args: pulumi.StringArray{
			pulumi.String("--config"), pulumi.String(configDir + "/upc.json"),
		},
		Env: env,
		Ports: corev1.ContainerPortArray{corev1.ContainerPortArgs{
			Name: pulumi.String("https"), ContainerPort: pulumi.Int(a.RouterPort),
		}},
		// The router serves HTTPS only (the kubelet does not verify it);
		// /readyz answers once its view is rebuilt from the cluster.
		ReadinessProbe: &corev1.ProbeArgs{
			HttpGet: &corev1.HTTPGetActionArgs{
				Path: pulumi.String("/readyz"), Port: pulumi.Int(a.RouterPort), Scheme: pulumi.String("HTTPS"),
			},
			PeriodSeconds: pulumi.Int(2),
		},
		VolumeMounts: corev1.VolumeMountArray{
			corev1.VolumeMountArgs{Name: pulumi.String("config"), MountPath: pulumi.String(configDir), ReadOnly: pulumi.Bool(true)},
			corev1.VolumeMountArgs{Name: pulumi.String("secret"), MountPath: pulumi.String(SecretDir), ReadOnly: pulumi.Bool(true)},
			corev1.VolumeMountArgs{Name: pulumi.String("ca"), MountPath: pulumi.String(CADir), ReadOnly: pulumi.Bool(true)},
			corev1.VolumeMountArgs{Name: pulumi.String("state"), MountPath: pulumi.String(StateDir)},
		},
		SecurityContext: &corev1.SecurityContextArgs{
			AllowPrivilegeEscalation: pulumi.Bool(false),
			ReadOnlyRootFilesystem:   pulumi.Bool(true),
			RunAsNonRoot:             pulumi.Bool(true),
			RunAsUser:                pulumi.Int(routerUID),
		},
	}
	podSpec := &corev1.PodSpecArgs{
		ServiceAccountName:            sa.Metadata.Name().Elem(),
		HostNetwork:                   pulumi.Bool(a.HostNetwork),
		TerminationGracePeriodSeconds: pulumi.Int(5),
		Containers:                    corev1.ContainerArray{container},
		// The Secrets' files are root's, group routerUID, mode 0440:
		// readable by the router, by no one else in the pod.
		SecurityContext: &corev1.PodSecurityContextArgs{FsGroup: pulumi.Int(routerUID)},
		Volumes: corev1.VolumeArray{
			corev1.VolumeArgs{
				Name:      pulumi.String("config"),
				ConfigMap: &corev1.ConfigMapVolumeSourceArgs{Name: cm.Metadata.Name().Elem()},
			},
			corev1.VolumeArgs{
				Name: pulumi.String("secret"),
				Secret: &corev1.SecretVolumeSourceArgs{
					SecretName:  tokenSecret.Metadata.Name().Elem(),
					DefaultMode: pulumi.Int(0o440),
				},
			},
			corev1.VolumeArgs{
				Name: pulumi.String("ca"),
				Secret: &corev1.SecretVolumeSourceArgs{
					SecretName:  caSecret.Metadata.Name().Elem(),
					DefaultMode: pulumi.Int(0o440),
				},
			},
			corev1.VolumeArgs{Name: pulumi.String("state"), EmptyDir: &corev1.EmptyDirVolumeSourceArgs{}},
		},
	}
	if len(a.NodeSelector) > 0 {
		podSpec.NodeSelector = toStringMap(a.NodeSelector)
	}
	dep, err := appsv1.NewDeployment(ctx, name+"-deployment", &appsv1.DeploymentArgs{
		Metadata: meta(RouterName),
		Spec: &appsv1.DeploymentSpecArgs{
			Replicas: pulumi.Int(1), // the router's state is one process's (rebuilt from labels)
			Strategy: &appsv1.DeploymentStrategyArgs{Type: pulumi.String("Recreate")},
			Selector: &metav1.LabelSelectorArgs{MatchLabels: podLabels},
			Template: &corev1.PodTemplateSpecArgs{
				Metadata: &metav1.ObjectMetaArgs{
					Labels: podLabels,
					Annotations: pulumi.StringMap{
						AdminTokenHashAnnotation: pulumi.String(access.Hash(a.AdminToken)),
						CAHashAnnotation:         pulumi.String(sha256Hex(a.CACert)),
						ConfigHashAnnotation:     configHash,
					},
				},
				Spec: podSpec,
			},
		},
	}, append(in, pulumi.DependsOn([]pulumi.Resource{rb, crb}))...)
	if err != nil {
		return nil, fmt.Errorf("deployment: %w", err)
	}

	port := corev1.ServicePortArgs{
		Name: pulumi.String("https"), Port: pulumi.Int(a.RouterPort), TargetPort: pulumi.Int(a.RouterPort),
		AppProtocol: pulumi.String("https"),
	}
	spec := &corev1.ServiceSpecArgs{
		Type:     pulumi.String("NodePort"),
		Selector: podLabels,
	}
	if a.NodePort != 0 {
		port.NodePort = pulumi.Int(a.NodePort)
	} else {
		// The balancer takes the address reserved for it, known before the
		// router starts: its certificate names it.
		spec.Type = pulumi.String("LoadBalancer")
		spec.LoadBalancerIP = a.URLHost.ToStringOutput().ToStringPtrOutput()
		if len(a.LoadBalancerSourceRanges) > 0 {
			spec.LoadBalancerSourceRanges = pulumi.ToStringArray(a.LoadBalancerSourceRanges)
		}
	}
	spec.Ports = corev1.ServicePortArray{port}
	svc, err := corev1.NewService(ctx, name+"-service", &corev1.ServiceArgs{
		Metadata: meta(RouterName),
		Spec:     spec,
	}, append(in, pulumi.DependsOn([]pulumi.Resource{dep}))...)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}

	r.Namespace = nsName
	r.AdminToken = token
	r.CACert = pulumi.String(a.CACert).ToStringOutput()
	if a.NodePort != 0 {
		r.URL = pulumi.Sprintf("https://%s:%d", a.URLHost, a.NodePort)
	} else {
		// Once the balancer has its address (the reserved one).
		host := svc.Status.LoadBalancer().Ingress().Index(pulumi.Int(0)).Ip().Elem()
		r.URL = pulumi.Sprintf("https://%s:%d", hostOrIP(a.URLHost, host), a.RouterPort)
	}
	if err := ctx.RegisterResourceOutputs(r, pulumi.Map{"namespace": r.Namespace, "url": r.URL, "adminToken": r.AdminToken, "caCert": r.CACert}); err != nil {
		return nil, fmt.Errorf("router outputs: %w", err)
	}
	return r, nil
}

// catalogJSON is the catalog as the ConfigMap holds it, each service whose
// name refs has running that reference.
func catalogJSON(cat *conf.Catalog, refs map[string]string) (string, error) {
	cp := *cat
	cp.Services = slices.Clone(cat.Services)
	for i, s := range cp.Services {
		if r, ok := refs[s.Name]; ok {
			cp.Services[i].Image = r
		}
	}
	b, err := json.MarshalIndent(&cp, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode catalog: %w", err)
	}
	return string(b), nil
}

// hostOrIP is the reserved host once ip (the balancer's status) is known:
// the URL waits for the balancer, and names the host its certificate has.
func hostOrIP(host pulumi.StringInput, ip pulumi.StringOutput) pulumi.StringOutput {
	return pulumi.All(host, ip).ApplyT(func(v []any) string {
		if h, _ := v[0].(string); h != "" {
			return h
		}
		return v[1].(string)
	}).(pulumi.StringOutput)
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func toStringMap(m map[string]string) pulumi.StringMap {
	out := pulumi.StringMap{}
	for k, v := range m {
		out[k] = pulumi.String(v)
	}
	return out
}

func policyRules(rules []rbacv1.PolicyRuleArgs) rbacv1.PolicyRuleArray {
	out := make(rbacv1.PolicyRuleArray, len(rules))
	for i, r := range rules {
		out[i] = r
	}
	return out
}
