// Package auto drives the infra program through Pulumi's Automation API,
// inline: the program runs inside this process, so no language host is
// needed, only the engine (`pulumi`) and the provider plugins. State goes to
// a local file backend; no Pulumi Cloud account is involved.
package auto

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optdestroy"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optpreview"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optup"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"
	"sigs.k8s.io/yaml"

	"github.com/e-mission/upc/infra/stack"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
)

// EngineVersion is the engine `make tools` builds, and the cache folder's key.
const EngineVersion = "v3.274.1"

// Options name the stack and where everything lives.
type Options struct {
	// ProjectDir holds Pulumi.yaml and the stacks' Pulumi.<stack>.yaml; the
	// program's relative paths (images manifest, kubeconfig) resolve there.
	ProjectDir string
	// Stack is kind, gke, existing or a name of the user's whose upc:target
	// says which.
	Stack string
	// StateDir holds the file backend, the workspace and the local
	// passphrase; default <ProjectDir>/.upc/infra.
	StateDir string
	// PulumiRoot is the engine's install root (bin/pulumi under it); default
	// $UPC_PULUMI_ROOT, the tools cache, then `pulumi` on PATH.
	PulumiRoot string
	// PulumiHome is the engine's home (installed plugins); default the
	// engine's own (~/.pulumi, where `make tools` installs them).
	PulumiHome string
	// Config overrides the stack file's settings, "upc:key" → value.
	Config map[string]string
	// RotateCA replaces the stack's CA with a new one before the update
	// (`up --rotate-ca`), as if the stack had none.
	RotateCA bool
	// Progress receives the engine's progress output.
	Progress io.Writer
}

// Result is what an up leaves: the stack outputs (secrets included: the
// caller decides what to print) and which of them are secrets.
type Result struct {
	Outputs map[string]any
	Secrets map[string]bool
	Summary string
}

// AdminTokenKey is the stack setting holding the router's admin token.
const AdminTokenKey = "upc:adminToken"

// CACertKey and CAKeyKey are the stack settings holding its CA (PEM): the
// certificate plain, the key a secret.
const (
	CACertKey = "upc:caCert"
	CAKeyKey  = "upc:caKey"
)

// secretKeys are settings always stored as secrets, however given.
var secretKeys = map[string]bool{AdminTokenKey: true, CAKeyKey: true}

func (o *Options) defaults() error {
	if o.ProjectDir == "" {
		return errors.New("infra: project folder required")
	}
	dir, err := filepath.Abs(o.ProjectDir)
	if err != nil {
		return fmt.Errorf("infra: project folder: %w", err)
	}
	o.ProjectDir = dir
	if o.Stack == "" {
		return errors.New("infra: --stack required (kind, gke or existing)")
	}
	if o.StateDir == "" {
		o.StateDir = filepath.Join(o.ProjectDir, ".upc", "infra")
	}
	if o.PulumiRoot == "" {
		root, err := FindPulumi()
		if err != nil {
			return err
		}
		o.PulumiRoot = root
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return nil
}

// ToolsDir is the versioned cache `make tools` builds into:
// $UPC_TOOLS, else ~/.cache/upc-tools.
func ToolsDir() string {
	if d := os.Getenv("UPC_TOOLS"); d != "" {
		return d
	}
	home, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "upc-tools")
	}
	return filepath.Join(home, "upc-tools")
}

// FindPulumi finds the engine's install root: $UPC_PULUMI_ROOT, the tools
// cache, or the folder above `pulumi` on PATH.
func FindPulumi() (string, error) {
	var tried []string
	for _, root := range []string{os.Getenv("UPC_PULUMI_ROOT"), filepath.Join(ToolsDir(), "pulumi-"+EngineVersion)} {
		if root == "" {
			continue
		}
		if fi, err := os.Stat(filepath.Join(root, "bin", "pulumi")); err == nil && !fi.IsDir() {
			return root, nil
		}
		tried = append(tried, root)
	}
	if p, err := exec.LookPath("pulumi"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(filepath.Dir(p)), nil
	}
	return "", fmt.Errorf("infra: no pulumi engine (looked in %s and on PATH): run `make tools`", strings.Join(tried, ", "))
}

// MergeConfig is the stack's configuration: the stack file's settings, then
// the overrides, keys in their full form ("namespace" is "upc:namespace"),
// so an override always wins over the file.
func MergeConfig(file, overrides map[string]string) auto.ConfigMap {
	cm := auto.ConfigMap{}
	for _, src := range []map[string]string{file, overrides} {
		for _, k := range slices.Sorted(maps.Keys(src)) {
			cm[FullKey(k)] = auto.ConfigValue{Value: src[k], Secret: secretKeys[FullKey(k)]}
		}
	}
	return cm
}

// FullKey is a setting's full name: "namespace" is "upc:namespace".
func FullKey(k string) string {
	if !strings.Contains(k, ":") {
		return "upc:" + k
	}
	return k
}

// StackConfig reads the `config:` of <dir>/Pulumi.<stack>.yaml, if there is
// one, as strings.
func StackConfig(dir, stackName string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "Pulumi."+stackName+".yaml"))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stack settings: %w", err)
	}
	var f struct {
		Config map[string]any `json:"config"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("stack settings Pulumi.%s.yaml: %w", stackName, err)
	}
	out := map[string]string{}
	for k, v := range f.Config {
		switch v := v.(type) {
		case string:
			out[k] = v
		case bool, float64:
			out[k] = fmt.Sprint(v)
		default:
			return nil, fmt.Errorf("stack settings Pulumi.%s.yaml: %s: only strings, numbers and booleans", stackName, k)
		}
	}
	return out, nil
}

// passphraseFile is the local secrets passphrase, made once per state
// folder, unless the user set PULUMI_CONFIG_PASSPHRASE(_FILE).
func passphraseFile(stateDir string) (string, error) {
	p := filepath.Join(stateDir, "passphrase")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, []byte(hex.EncodeToString(b)), 0o600); err != nil {
		return "", fmt.Errorf("write passphrase: %w", err)
	}
	return p, nil
}

// Stack opens (or makes) the stack with the program inline and its
// configuration set.
func Stack(ctx context.Context, o Options) (auto.Stack, error) {
	if o.RotateCA {
		for k := range o.Config {
			if fk := FullKey(k); fk == CACertKey || fk == CAKeyKey {
				return auto.Stack{}, fmt.Errorf("infra: --rotate-ca makes a new CA: give no %s with it", fk)
			}
		}
	}
	if err := o.defaults(); err != nil {
		return auto.Stack{}, err
	}
	backend := filepath.Join(o.StateDir, "state")
	work := filepath.Join(o.StateDir, "work", o.Stack)
	for _, d := range []string{backend, work} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return auto.Stack{}, fmt.Errorf("infra: state folder: %w", err)
		}
	}
	env := map[string]string{
		"PULUMI_BACKEND_URL":                          "file://" + backend,
		"PULUMI_SKIP_UPDATE_CHECK":                    "true",
		"PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
		"PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK":    "true",
	}
	if os.Getenv("PULUMI_CONFIG_PASSPHRASE") == "" && os.Getenv("PULUMI_CONFIG_PASSPHRASE_FILE") == "" {
		pf, err := passphraseFile(o.StateDir)
		if err != nil {
			return auto.Stack{}, fmt.Errorf("infra: %w", err)
		}
		env["PULUMI_CONFIG_PASSPHRASE_FILE"] = pf
	}
	cmd, err := auto.NewPulumiCommand(&auto.PulumiCommandOptions{Root: o.PulumiRoot, SkipVersionCheck: true})
	if err != nil {
		return auto.Stack{}, fmt.Errorf("infra: pulumi engine: %w", err)
	}
	// The workspace is a folder of ours, not the project folder: the
	// Automation API writes Pulumi.yaml and the stack's settings (with the
	// secrets salt) into it, which must not rewrite the repository's files.
	opts := []auto.LocalWorkspaceOption{
		auto.WorkDir(work),
		auto.Project(workspace.Project{
			Name:    tokens.PackageName("upc"),
			Runtime: workspace.NewProjectRuntimeInfo("go", nil),
			Backend: &workspace.ProjectBackend{URL: "file://" + backend},
		}),
		auto.EnvVars(env),
		auto.SecretsProvider("passphrase"),
		auto.Pulumi(cmd),
	}
	if o.PulumiHome != "" {
		opts = append(opts, auto.PulumiHome(o.PulumiHome))
	}
	st, err := auto.UpsertStackInlineSource(ctx, o.Stack, "upc", stack.RunIn(o.ProjectDir), opts...)
	if err != nil {
		return auto.Stack{}, fmt.Errorf("infra: stack %s: %w", o.Stack, err)
	}
	cfg, err := StackConfig(o.ProjectDir, o.Stack)
	if err != nil {
		return auto.Stack{}, err
	}
	cm := MergeConfig(cfg, o.Config)
	if len(cm) > 0 {
		if err := st.SetAllConfig(ctx, cm); err != nil {
			return auto.Stack{}, fmt.Errorf("infra: configure stack %s: %w", o.Stack, err)
		}
	}
	stored, err := st.GetAllConfig(ctx)
	if err != nil {
		return auto.Stack{}, fmt.Errorf("infra: read stack %s's settings: %w", o.Stack, err)
	}
	if NeedsAdminToken(stored) {
		// Made once, then kept (encrypted) in the stack's settings in the
		// state folder: later ups deploy the same token.
		tok := auto.ConfigValue{Value: access.NewToken(access.PrefixUser), Secret: true}
		if err := st.SetConfig(ctx, AdminTokenKey, tok); err != nil {
			return auto.Stack{}, fmt.Errorf("infra: store stack %s's new admin token: %w", o.Stack, err)
		}
		fmt.Fprintf(progress(o), "infra: stack %s had no %s: made one (a secret output, adminToken)\n", o.Stack, AdminTokenKey)
	}
	if o.RotateCA || NeedsCA(stored) {
		// Likewise the stack's CA: made once, kept in its settings (the key
		// encrypted), so that later ups keep every certificate valid; made
		// again only on request.
		cert, key, err := NewCA(o.Stack)
		if err != nil {
			return auto.Stack{}, fmt.Errorf("infra: stack %s's CA: %w", o.Stack, err)
		}
		if err := st.SetAllConfig(ctx, auto.ConfigMap{
			CACertKey: {Value: cert},
			CAKeyKey:  {Value: key, Secret: true},
		}); err != nil {
			return auto.Stack{}, fmt.Errorf("infra: store stack %s's new CA: %w", o.Stack, err)
		}
		fmt.Fprintf(progress(o), "infra: stack %s had no %s and %s: made a CA, %q (its certificate is the output caCert; `up --ca-out FILE` writes it)\n", o.Stack, CACertKey, CAKeyKey, CAName(o.Stack))
	}
	return st, nil
}

// NeedsCA reports whether a stack's settings lack both halves of its CA,
// which Stack then makes. With one half only, it makes nothing: the
// program's validation names the missing one.
func NeedsCA(settings auto.ConfigMap) bool {
	return strings.TrimSpace(settings[CACertKey].Value) == "" && strings.TrimSpace(settings[CAKeyKey].Value) == ""
}

// CAName is the name of the CA made for a stack.
func CAName(stackName string) string { return "UPC operator CA (" + stackName + ")" }

// NewCA makes a stack's CA, valid for certs.DefaultCATTL: its certificate
// and key, PEM.
func NewCA(stackName string) (certPEM, keyPEM string, err error) {
	ca, err := certs.NewCA(CAName(stackName), certs.DefaultCATTL)
	if err != nil {
		return "", "", err
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return "", "", err
	}
	return string(ca.CertPEM), string(key), nil
}

// NeedsAdminToken reports whether a stack's settings lack the router's
// admin token, which Stack then makes.
func NeedsAdminToken(settings auto.ConfigMap) bool {
	return strings.TrimSpace(settings[AdminTokenKey].Value) == ""
}

// Up creates or updates the stack's resources.
func Up(ctx context.Context, o Options) (*Result, error) {
	st, err := Stack(ctx, o)
	if err != nil {
		return nil, err
	}
	res, err := st.Up(ctx, optup.ProgressStreams(progress(o)), optup.ErrorProgressStreams(progress(o)))
	if err != nil {
		return nil, fmt.Errorf("infra up %s: %w", o.Stack, err)
	}
	out := &Result{Outputs: map[string]any{}, Secrets: map[string]bool{}, Summary: res.Summary.Result}
	for k, v := range res.Outputs {
		out.Outputs[k] = v.Value
		out.Secrets[k] = v.Secret
	}
	return out, nil
}

// Preview shows what Up would do.
func Preview(ctx context.Context, o Options) (string, error) {
	st, err := Stack(ctx, o)
	if err != nil {
		return "", err
	}
	res, err := st.Preview(ctx, optpreview.ProgressStreams(progress(o)), optpreview.ErrorProgressStreams(progress(o)))
	if err != nil {
		return "", fmt.Errorf("infra preview %s: %w", o.Stack, err)
	}
	var parts []string
	for _, op := range slices.Sorted(maps.Keys(res.ChangeSummary)) {
		parts = append(parts, fmt.Sprintf("%s %d", op, res.ChangeSummary[op]))
	}
	return strings.Join(parts, ", "), nil
}

// Destroy deletes every resource of the stack and, with remove, the stack
// itself (its state and settings).
func Destroy(ctx context.Context, o Options, remove bool) error {
	st, err := Stack(ctx, o)
	if err != nil {
		return err
	}
	if _, err := st.Destroy(ctx, optdestroy.ProgressStreams(progress(o)), optdestroy.ErrorProgressStreams(progress(o))); err != nil {
		return fmt.Errorf("infra destroy %s: %w", o.Stack, err)
	}
	if remove {
		if err := st.Workspace().RemoveStack(ctx, o.Stack); err != nil {
			return fmt.Errorf("infra: remove stack %s: %w", o.Stack, err)
		}
	}
	return nil
}

func progress(o Options) io.Writer {
	if o.Progress == nil {
		return io.Discard
	}
	return o.Progress
}
