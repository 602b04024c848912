package stack

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/images"
)

// Outputs are the stack outputs every target exports.
type Outputs struct {
	Kubeconfig pulumi.StringOutput
	RouterURL  pulumi.StringOutput
	Namespace  pulumi.StringOutput
	// AdminToken is the router's admin credential (a secret).
	AdminToken pulumi.StringOutput
	// CACert is the stack's CA certificate (PEM, not a secret): clients
	// verify the router and the instances with it.
	CACert pulumi.StringOutput
	// Images maps each service to the image the cluster runs it from.
	Images map[string]string
	// ImageRefs, when set, replaces Images in the exports: references known
	// once the images are pushed (GKE's registry digests).
	ImageRefs pulumi.StringMapOutput
	// Exports are the stack outputs as exported (secrets marked), by name.
	Exports map[string]pulumi.Output
}

// Run is the program under `pulumi up`: relative paths in the stack's
// configuration resolve against the project folder (the one holding
// Pulumi.yaml), whatever the working directory. Pulumi.yaml's `main:
// infra/` makes the language host run the program in infra/, one folder
// below the project.
func Run(ctx *pulumi.Context) error {
	wd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	dir, err := ProjectDir(ctx.RootDirectory(), wd)
	if err != nil {
		return err
	}
	return RunIn(dir)(ctx)
}

// ProjectDir is the project folder: root when the engine names it (the
// language host passes it as PULUMI_ROOT_DIRECTORY, ctx.RootDirectory()),
// else the nearest folder at or above wd holding Pulumi.yaml (or .yml), as
// Pulumi itself finds a project.
func ProjectDir(root, wd string) (string, error) {
	if root != "" {
		return filepath.Abs(root)
	}
	wd, err := filepath.Abs(wd)
	if err != nil {
		return "", fmt.Errorf("project folder: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		for _, name := range []string{"Pulumi.yaml", "Pulumi.yml"} {
			if fi, err := os.Stat(filepath.Join(d, name)); err == nil && !fi.IsDir() {
				return d, nil
			}
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("project folder: no Pulumi.yaml in %s or any folder above it", wd)
		}
	}
}

// RunIn is the program with configuration paths relative to dir (the
// Automation API runs it inline, in the CLI's own process).
func RunIn(dir string) pulumi.RunFunc {
	return func(ctx *pulumi.Context) error {
		cfg, err := LoadConfig(ctx, dir)
		if err != nil {
			return fmt.Errorf("configuration of stack %s: %w", ctx.Stack(), err)
		}
		return Program(cfg)(ctx)
	}
}

// Program is the program for an already loaded configuration (the CLI's
// Automation API path, where flags may override the stack's settings).
func Program(cfg Config) pulumi.RunFunc {
	return func(ctx *pulumi.Context) error {
		_, err := deploy(ctx, cfg)
		return err
	}
}

// deploy stands up cfg.Target and exports its outputs; it is the seam the
// mock tests call.
func deploy(ctx *pulumi.Context, cfg Config) (*Outputs, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var (
		out *Outputs
		err error
	)
	switch cfg.Target {
	case TargetExisting:
		out, err = deployExisting(ctx, cfg)
	case TargetKind:
		out, err = deployKind(ctx, cfg)
	case TargetGKE:
		out, err = deployGKE(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	out.Exports = map[string]pulumi.Output{
		"kubeconfig": pulumi.ToSecret(out.Kubeconfig),
		"routerUrl":  out.RouterURL,
		"namespace":  out.Namespace,
		// The router's admin credential: `upc infra up --admin-token-file`
		// writes it out; `pulumi stack output --show-secrets adminToken`.
		"adminToken": pulumi.ToSecret(out.AdminToken),
		// What clients verify the router and the instances with: `upc infra
		// up --ca-out FILE` writes it, for `upc client --ca FILE`.
		"caCert": out.CACert,
		"images": pulumi.ToStringMap(out.Images).ToStringMapOutput(),
		// Where the admin token is, never the token itself: the Kubernetes
		// Secret the router reads, and the command that prints the output.
		"adminTokenRef": pulumi.Sprintf("Secret %s/%s, key %s; %s", out.Namespace, SecretName, AdminTokenKey, stackOutputCmd(ctx.Stack(), "adminToken", true)),
		// From `pulumi up` to `upc client` in one copy-paste: see ClientCommand.
		"upcClient": out.RouterURL.ApplyT(func(u string) string { return ClientCommand(ctx.Stack(), u) }).(pulumi.StringOutput),
	}
	if out.ImageRefs != (pulumi.StringMapOutput{}) {
		out.Exports["images"] = out.ImageRefs
	}
	for _, k := range slices.Sorted(maps.Keys(out.Exports)) {
		ctx.Export(k, out.Exports[k])
	}
	return out, nil
}

// Files ClientCommand writes in the working directory.
const (
	ClientCAFile    = "upc-ca.crt"
	ClientTokenFile = "upc-admin.token"
)

// stackOutputCmd is the Pulumi CLI command printing one stack output.
func stackOutputCmd(stackName, output string, secret bool) string {
	c := "pulumi stack output --stack " + stackName
	if secret {
		c += " --show-secrets"
	}
	return c + " " + output
}

// ClientCommand is the upcClient output: a shell line that writes the
// stack's CA certificate and admin token to files (the token's readable by
// its owner alone) and starts `upc client` on the router with them, ready
// for the user's flags and subcommand:
//
//	eval "$(pulumi stack output upcClient)" --user alice launch --key-file alice.key --secret-out alice.pm
//
// (eval joins its arguments, so they end the line's last command).
func ClientCommand(stackName, routerURL string) string {
	return fmt.Sprintf("%s > %s && (umask 077 && %s > %s) && upc client --router %s --ca %s --token-file %s",
		stackOutputCmd(stackName, "caCert", false), ClientCAFile,
		stackOutputCmd(stackName, "adminToken", true), ClientTokenFile,
		routerURL, ClientCAFile, ClientTokenFile)
}

// catalogFor copies the catalog (built-in when cfg has none), pins it to the
// manifest's images and points each pinned entry at image(name, ref).
func catalogFor(cfg Config, image func(name, ref string) string) (*conf.Catalog, map[string]string, error) {
	cat := cfg.Catalog
	if cat == nil {
		c, err := conf.DefaultCatalog()
		if err != nil {
			return nil, nil, fmt.Errorf("built-in catalog: %w", err)
		}
		cat = c
	}
	cp := *cat
	cp.Services = slices.Clone(cat.Services)
	cfg.Manifest.Pin(&cp)
	used := map[string]string{}
	for i, s := range cp.Services {
		im, ok := cfg.Manifest.Images[s.Name]
		if !ok {
			continue
		}
		cp.Services[i].Image = image(s.Name, im.Ref)
		used[s.Name] = cp.Services[i].Image
	}
	used["router"] = image("router", cfg.Manifest.Images["router"].Ref)
	return &cp, used, nil
}

// tagOf is the tag of a reference "repo/name:tag".
func tagOf(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return "latest"
}

// manifestNames are the manifest's images in a stable order.
func manifestNames(m *images.Manifest) []string { return slices.Sorted(maps.Keys(m.Images)) }

func deployExisting(ctx *pulumi.Context, cfg Config) (*Outputs, error) {
	cat, used, err := catalogFor(cfg, func(_, ref string) string { return ref })
	if err != nil {
		return nil, err
	}
	kubeconfig := pulumi.ToSecret(pulumi.String(cfg.Existing.Kubeconfig)).(pulumi.StringOutput)
	r, err := NewRouter(ctx, "upc", RouterArgs{
		Kubeconfig:   kubeconfig,
		AdminToken:   cfg.AdminToken,
		CACert:       cfg.CACert,
		CAKey:        cfg.CAKey,
		Context:      cfg.Existing.Context,
		Namespace:    cfg.Namespace,
		RouterPort:   cfg.RouterPort,
		NodePort:     cfg.RouterNodePort,
		Image:        used["router"],
		Catalog:      cat,
		NodeSelector: cfg.NodeSelector,
		NodeAddress:  cfg.NodeAddress,
		HostPathDir:  cfg.HostPathDir,
		StorageClass: cfg.StorageClass,
		HostNetwork:  cfg.HostNetwork,
		APIServer:    cfg.APIServer,
		// The cluster's nodes hold our images already (nothing can be
		// pulled): run them by the ID the manifest pins.
		ImageByID:  true,
		PullPolicy: "Never",
		URLHost:    pulumi.String(urlHost(cfg.NodeAddress)),
	})
	if err != nil {
		return nil, err
	}
	return &Outputs{Kubeconfig: kubeconfig, RouterURL: r.URL, Namespace: r.Namespace, AdminToken: r.AdminToken, CACert: r.CACert, Images: used}, nil
}

func urlHost(nodeAddress string) string {
	if nodeAddress == "" {
		return "127.0.0.1"
	}
	return nodeAddress
}
