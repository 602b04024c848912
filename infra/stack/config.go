// Package stack is UPC's Pulumi program: three targets (kind, gke, existing)
// that each end in the same router deployment. Run is the program for
// `pulumi up` (infra/main.go) and for the Automation API (infra/auto); tests
// call deploy with Pulumi's mocks.
package stack

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/images"
)

// Targets a stack can stand up.
const (
	TargetKind     = "kind"
	TargetGKE      = "gke"
	TargetExisting = "existing"
)

// NodePortMin and NodePortMax bound Kubernetes' default node-port range, where
// every instance's Service (and the router's on kind and existing) listens.
const (
	NodePortMin = 30000
	NodePortMax = 32767
)

// Config is everything the program needs, read from the stack's `upc:*`
// configuration by LoadConfig (or built directly by tests and the CLI).
type Config struct {
	// Target is kind, gke or existing; default the stack's name.
	Target string
	// Namespace holds the router and every instance; default "upc".
	Namespace string
	// RouterPort is the port the router listens on in its pod and, on GKE,
	// its load balancer's port; default conf.DefaultServiceRouterPort.
	RouterPort int
	// RouterNodePort is the router Service's node port on kind and existing.
	RouterNodePort int
	// Catalog is the service catalog deployed as a ConfigMap; default the
	// built-in one.
	Catalog *conf.Catalog
	// Manifest names the images of one build (build/images.json); it must
	// have the router's image and pins the catalog.
	Manifest *images.Manifest
	// NodeSelector places the router and the instances, e.g. upc.node=real.
	NodeSelector map[string]string
	// NodeAddress is the host in the router URL and in instance addresses
	// (kind and existing); empty lets the router use the node's InternalIP.
	NodeAddress string
	// HostPathDir, when set, makes per-user claims bind to hostPath volumes
	// the router creates (clusters with no dynamic storage class).
	HostPathDir string
	// StorageClass of per-user claims where the cluster provisions them.
	StorageClass string
	// HostNetwork and APIServer ("host:port") let the router reach an API
	// server that listens on the node's loopback only (the local cluster).
	HostNetwork bool
	APIServer   string
	// AdminToken is the router's admin credential (upc:adminToken, a
	// secret): a `upcu_` token, in a Kubernetes Secret the router reads
	// through its config's admin_token_file. Required: `upc infra` makes one
	// when the stack has none (and keeps it in the stack's settings).
	AdminToken string
	// CACert and CAKey are the stack's CA, PEM (upc:caCert, plain config;
	// upc:caKey, a secret): the router issues its own serving certificate
	// and every instance's from it, and clients verify both against
	// CACert (the caCert output). Required: `upc infra` makes one when the
	// stack has neither.
	CACert string
	CAKey  string

	Existing ExistingConfig
	Kind     KindConfig
	GKE      GKEConfig
}

// ExistingConfig names the cluster of the existing target.
type ExistingConfig struct {
	// Kubeconfig is the kubeconfig's content (a secret in the state).
	Kubeconfig string
	// Context selects a context of it; empty means its current one.
	Context string
}

// KindConfig shapes the kind target's cluster.
type KindConfig struct {
	// ClusterName is the kind cluster's name; default "upc".
	ClusterName string
	// NodeImage is the kindest/node image; empty means kind's default.
	NodeImage string
	// Workers is the number of worker nodes beside the control plane.
	Workers int
}

// GKEConfig shapes the gke target.
type GKEConfig struct {
	Project string
	Region  string
	// Zone makes a zonal cluster (one control plane, cheaper) when set.
	Zone string
	// ClusterName names the cluster, network and repository; default "upc".
	ClusterName string
	NodeCount   int
	MachineType string
	DiskSizeGB  int
	Spot        bool
	// SourceRanges may reach the node ports and the router's port.
	SourceRanges []string
	// SubnetCIDR is the nodes' subnet.
	SubnetCIDR string
	// Repository is the Artifact Registry repository's ID.
	Repository string
}

// Defaults of the configuration.
const (
	DefaultNamespace      = "upc"
	DefaultRouterNodePort = 30430
	DefaultClusterName    = "upc"
	DefaultGKERegion      = "us-central1"
	DefaultGKEZone        = "us-central1-a"
	DefaultNodeCount      = 2
	DefaultMachineType    = "e2-standard-2"
	DefaultDiskSizeGB     = 30
	DefaultSubnetCIDR     = "10.10.0.0/20"
)

// MinAdminTokenLen is the shortest admin token accepted: access.PrefixUser
// and 256 bits in base64url, as access.NewToken makes them.
const MinAdminTokenLen = len(access.PrefixUser) + 43

// LoadConfig reads the stack's `upc:*` configuration; relative paths are
// resolved against dir (the project folder).
func LoadConfig(ctx *pulumi.Context, dir string) (Config, error) {
	c := config.New(ctx, "upc")
	var errs []error
	cfg := Config{
		Target:         c.Get("target"),
		Namespace:      c.Get("namespace"),
		RouterPort:     c.GetInt("routerPort"),
		RouterNodePort: c.GetInt("routerNodePort"),
		NodeAddress:    c.Get("nodeAddress"),
		HostPathDir:    c.Get("hostPathDir"),
		StorageClass:   c.Get("storageClass"),
		HostNetwork:    c.GetBool("routerHostNetwork"),
		APIServer:      c.Get("apiServer"),
		AdminToken:     strings.TrimSpace(c.Get("adminToken")),
		CACert:         strings.TrimSpace(c.Get("caCert")),
		CAKey:          strings.TrimSpace(c.Get("caKey")),
		Kind: KindConfig{
			ClusterName: c.Get("kindClusterName"),
			NodeImage:   c.Get("kindNodeImage"),
			Workers:     c.GetInt("kindWorkers"),
		},
		GKE: GKEConfig{
			Project:     c.Get("gcpProject"),
			Region:      c.Get("gcpRegion"),
			Zone:        c.Get("gcpZone"),
			ClusterName: c.Get("clusterName"),
			NodeCount:   c.GetInt("nodeCount"),
			MachineType: c.Get("machineType"),
			DiskSizeGB:  c.GetInt("diskSizeGb"),
			Spot:        c.GetBool("spot"),
			SubnetCIDR:  c.Get("subnetCidr"),
			Repository:  c.Get("repository"),
		},
	}
	if cfg.Target == "" {
		cfg.Target = ctx.Stack()
	}
	if cfg.GKE.Project == "" {
		cfg.GKE.Project = config.Get(ctx, "gcp:project")
	}
	if s := c.Get("sourceRanges"); s != "" {
		cfg.GKE.SourceRanges = splitList(s)
	}
	if s := c.Get("nodeSelector"); s != "" {
		sel, err := parseSelector(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("upc:nodeSelector: %w", err))
		}
		cfg.NodeSelector = sel
	}
	if p := c.Get("catalog"); p != "" {
		cat, err := conf.LoadCatalog(abs(dir, p))
		if err != nil {
			errs = append(errs, fmt.Errorf("upc:catalog: %w", err))
		}
		cfg.Catalog = cat
	}
	imagesPath := c.Get("images")
	if imagesPath == "" {
		imagesPath = "build/images.json"
	}
	m, err := images.LoadManifest(abs(dir, imagesPath))
	if err != nil {
		errs = append(errs, fmt.Errorf("upc:images (run `make images` first): %w", err))
	}
	cfg.Manifest = m
	if p := c.Get("kubeconfig"); p != "" && cfg.Target == TargetExisting {
		b, err := os.ReadFile(abs(dir, expandHome(p)))
		if err != nil {
			errs = append(errs, fmt.Errorf("upc:kubeconfig: %w", err))
		}
		cfg.Existing.Kubeconfig = string(b)
	}
	cfg.Existing.Context = c.Get("kubeContext")
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	cfg.SetDefaults()
	return cfg, cfg.Validate()
}

// SetDefaults fills what was left empty.
func (c *Config) SetDefaults() {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.RouterPort == 0 {
		c.RouterPort = conf.DefaultServiceRouterPort
	}
	if c.RouterNodePort == 0 {
		c.RouterNodePort = DefaultRouterNodePort
	}
	if c.Kind.ClusterName == "" {
		c.Kind.ClusterName = DefaultClusterName
	}
	g := &c.GKE
	if g.ClusterName == "" {
		g.ClusterName = DefaultClusterName
	}
	if g.Region == "" {
		g.Region = DefaultGKERegion
	}
	if g.NodeCount == 0 {
		g.NodeCount = DefaultNodeCount
	}
	if g.MachineType == "" {
		g.MachineType = DefaultMachineType
	}
	if g.DiskSizeGB == 0 {
		g.DiskSizeGB = DefaultDiskSizeGB
	}
	if g.SubnetCIDR == "" {
		g.SubnetCIDR = DefaultSubnetCIDR
	}
	if g.Repository == "" {
		g.Repository = g.ClusterName
	}
}

var dnsLabel = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("upc:%s: %s", key, fmt.Sprintf(format, a...)))
	}
	switch c.Target {
	case TargetKind, TargetGKE, TargetExisting:
	default:
		bad("target", "%q is not one of kind, gke, existing (it defaults to the stack's name)", c.Target)
	}
	if !dnsLabel.MatchString(c.Namespace) {
		bad("namespace", "%q is not a DNS label", c.Namespace)
	}
	if c.RouterPort < 1 || c.RouterPort > 65535 {
		bad("routerPort", "%d is not a port", c.RouterPort)
	}
	if c.RouterNodePort < NodePortMin || c.RouterNodePort > NodePortMax {
		bad("routerNodePort", "%d is outside the node-port range %d-%d", c.RouterNodePort, NodePortMin, NodePortMax)
	}
	if c.APIServer != "" {
		if _, _, err := net.SplitHostPort(c.APIServer); err != nil {
			bad("apiServer", "%q is not host:port", c.APIServer)
		}
	}
	switch {
	case c.AdminToken == "":
		bad("adminToken", "required: the router's admin token, a secret (`pulumi config set --secret upc:adminToken upcu_…`; `upc infra` makes one when the stack has none)")
	case !strings.HasPrefix(c.AdminToken, access.PrefixUser) || len(c.AdminToken) < MinAdminTokenLen:
		bad("adminToken", "not a router token: want %q followed by at least 256 random bits (%d characters in all; `upc infra` makes one when the stack has none)", access.PrefixUser, MinAdminTokenLen)
	case strings.ContainsFunc(c.AdminToken, unicode.IsSpace):
		bad("adminToken", "has white space inside")
	}
	for _, e := range validateCA(c.CACert, c.CAKey) {
		bad(e.key, "%s", e.msg)
	}
	if c.Manifest == nil {
		bad("images", "an image manifest is required")
	} else if _, ok := c.Manifest.Images["router"]; !ok {
		bad("images", "the manifest has no router image")
	}
	switch c.Target {
	case TargetExisting:
		if c.Existing.Kubeconfig == "" {
			bad("kubeconfig", "required for the existing target (a path)")
		}
	case TargetKind:
		if !dnsLabel.MatchString(c.Kind.ClusterName) {
			bad("kindClusterName", "%q is not a DNS label", c.Kind.ClusterName)
		}
		if c.Kind.Workers < 0 {
			bad("kindWorkers", "%d is negative", c.Kind.Workers)
		}
	case TargetGKE:
		g := c.GKE
		if g.Project == "" {
			bad("gcpProject", "required for the gke target (or gcp:project)")
		}
		if !dnsLabel.MatchString(g.ClusterName) || len(g.ClusterName) > 30 {
			bad("clusterName", "%q is not a DNS label of at most 30 characters", g.ClusterName)
		}
		if g.NodeCount < 1 {
			bad("nodeCount", "%d: at least one node", g.NodeCount)
		}
		if g.DiskSizeGB < 10 {
			bad("diskSizeGb", "%d: GKE needs at least 10", g.DiskSizeGB)
		}
		if len(g.SourceRanges) == 0 {
			bad("sourceRanges", "required for the gke target: the CIDRs that may reach the router and the node ports (e.g. your address/32)")
		}
		for _, r := range g.SourceRanges {
			if _, _, err := net.ParseCIDR(r); err != nil {
				bad("sourceRanges", "%q is not a CIDR", r)
			}
		}
		if _, _, err := net.ParseCIDR(g.SubnetCIDR); err != nil {
			bad("subnetCidr", "%q is not a CIDR", g.SubnetCIDR)
		}
	}
	return errors.Join(errs...)
}

// caProblem is what is wrong with one of the CA's two settings.
type caProblem struct{ key, msg string }

// caHint says where a CA comes from.
const caHint = "`upc infra` makes one when the stack has neither upc:caCert nor upc:caKey; to bring your own, `upc certs init DIR`, then `upc infra up --config caCert=\"$(cat DIR/ca.crt)\" --config caKey=\"$(cat DIR/ca.key)\"` (caKey is stored as a secret)"

// validateCA checks the stack's CA: both halves present, the certificate a
// CA's and still valid, the key its own. Each problem names its setting.
func validateCA(certPEM, keyPEM string) []caProblem {
	var out []caProblem
	if certPEM == "" {
		out = append(out, caProblem{"caCert", "required: the stack's CA certificate, PEM (" + caHint + ")"})
	}
	if keyPEM == "" {
		out = append(out, caProblem{"caKey", "required: the stack's CA key, PEM, a secret (" + caHint + ")"})
	}
	if len(out) > 0 {
		return out
	}
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return []caProblem{{"caCert", "not a PEM certificate (want -----BEGIN CERTIFICATE-----)"}}
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return []caProblem{{"caCert", fmt.Sprintf("not a certificate: %v", err)}}
	}
	name := cert.Subject.CommonName
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		out = append(out, caProblem{"caCert", fmt.Sprintf("%q is not a CA certificate (it cannot sign certificates)", name)})
	}
	if now := time.Now(); now.After(cert.NotAfter) {
		out = append(out, caProblem{"caCert", fmt.Sprintf("the CA %q expired on %s: rotate it (docs/infrastructure.md)", name, cert.NotAfter.Format(time.DateOnly))})
	} else if now.Before(cert.NotBefore) {
		out = append(out, caProblem{"caCert", fmt.Sprintf("the CA %q is not valid before %s", name, cert.NotBefore.Format(time.RFC3339))})
	}
	if kb, _ := pem.Decode([]byte(keyPEM)); kb == nil || !strings.HasSuffix(kb.Type, "PRIVATE KEY") {
		return append(out, caProblem{"caKey", "not a PEM private key (want -----BEGIN PRIVATE KEY-----)"})
	}
	if len(out) > 0 {
		return out
	}
	if _, err := certs.ParseCA([]byte(certPEM), []byte(keyPEM)); err != nil {
		return []caProblem{{"caKey", fmt.Sprintf("not the key of upc:caCert's CA %q: %v", name, err)}}
	}
	return nil
}

// Location is the cluster's zone when one is set, else its region.
func (g GKEConfig) Location() string {
	if g.Zone != "" {
		return g.Zone
	}
	return g.Region
}

// RegistryHost is the Artifact Registry host of the region.
func (g GKEConfig) RegistryHost() string { return g.Region + "-docker.pkg.dev" }

// ImagePath is the registry path of one of our images: the repository's
// path, the image's name and the build's tag.
func (g GKEConfig) ImagePath(name, tag string) string {
	return g.RegistryHost() + "/" + g.Project + "/" + g.Repository + "/" + name + ":" + tag
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, f)
	}
	return out
}

// parseSelector reads "k=v,k2=v2".
func parseSelector(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range splitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

func abs(dir, p string) string {
	if filepath.IsAbs(p) || dir == "" {
		return p
	}
	return filepath.Join(dir, p)
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, rest)
		}
	}
	return p
}

// itoa keeps label and port strings short to write.
func itoa(i int) string { return strconv.Itoa(i) }
