package main

import (
	"context"
	"fmt"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// kind is one resource type's behaviour; the server does the protocol.
type kind interface {
	// check returns every problem with the inputs (property, reason).
	check(news resource.PropertyMap) []*pulumirpc.CheckFailure
	// replaceKeys are the inputs whose change replaces the resource; a
	// change to any other input is an update.
	replaceKeys() []resource.PropertyKey
	create(ctx context.Context, in resource.PropertyMap) (id string, out resource.PropertyMap, err error)
	// read refreshes out; an empty id means the resource is gone.
	read(ctx context.Context, id string, in, out resource.PropertyMap) (string, resource.PropertyMap, error)
	update(ctx context.Context, id string, olds, news resource.PropertyMap) (resource.PropertyMap, error)
	delete(ctx context.Context, id string, in, out resource.PropertyMap) error
	// previewOutputs are the outputs unknown until create.
	previewOutputs() []resource.PropertyKey
}

type server struct {
	pulumirpc.UnimplementedResourceProviderServer
	host    *provider.HostClient
	version string
	kinds   map[string]kind
}

func newServer(host *provider.HostClient, version string) *server {
	return &server{host: host, version: version, kinds: map[string]kind{
		"upc:index:KindCluster":   &kindCluster{},
		"upc:index:KindImages":    &kindImages{},
		"upc:index:RegistryImage": &registryImage{},
	}}
}

var (
	unmarshal = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, SkipNulls: true}
	marshal   = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true}
)

func (s *server) kindOf(urn string) (kind, error) {
	t := string(resource.URN(urn).Type())
	k, ok := s.kinds[t]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "pulumi-resource-upc has no resource type %q", t)
	}
	return k, nil
}

func props(s *structpb.Struct) (resource.PropertyMap, error) {
	pm, err := plugin.UnmarshalProperties(s, unmarshal)
	if err != nil {
		return nil, fmt.Errorf("unmarshal properties: %w", err)
	}
	return pm, nil
}

func (s *server) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: s.version}, nil
}

func (s *server) Handshake(context.Context, *pulumirpc.ProviderHandshakeRequest) (*pulumirpc.ProviderHandshakeResponse, error) {
	return &pulumirpc.ProviderHandshakeResponse{AcceptSecrets: true, AcceptResources: true, AcceptOutputs: false}, nil
}

func (s *server) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	return &pulumirpc.GetSchemaResponse{Schema: `{"name":"upc","version":"` + s.version + `"}`}, nil
}

func (s *server) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (s *server) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (s *server) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true}, nil
}

func (s *server) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	k, err := s.kindOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	news, err := props(req.GetNews())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: k.check(news)}, nil
}

func (s *server) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	k, err := s.kindOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	olds, err := props(req.GetOldInputs())
	if err != nil {
		return nil, err
	}
	news, err := props(req.GetNews())
	if err != nil {
		return nil, err
	}
	d := olds.Diff(news)
	if d == nil || !d.AnyChanges() {
		return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
	}
	resp := &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_SOME}
	for _, key := range d.ChangedKeys() {
		resp.Diffs = append(resp.Diffs, string(key))
	}
	for _, key := range k.replaceKeys() {
		if d.Changed(key) {
			resp.Replaces = append(resp.Replaces, string(key))
		}
	}
	// Names are fixed (a kind cluster's, a registry path): the old one must
	// go before the new one can be made.
	resp.DeleteBeforeReplace = len(resp.Replaces) > 0
	return resp, nil
}

func (s *server) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	k, err := s.kindOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	in, err := props(req.GetProperties())
	if err != nil {
		return nil, err
	}
	if req.GetPreview() {
		out := in.Copy()
		for _, key := range k.previewOutputs() {
			out[key] = resource.MakeComputed(resource.NewStringProperty(""))
		}
		st, err := plugin.MarshalProperties(out, marshal)
		return &pulumirpc.CreateResponse{Properties: st}, err
	}
	id, out, err := k.create(ctx, plainMap(in))
	if err != nil {
		return nil, err
	}
	st, err := plugin.MarshalProperties(merge(in, out), marshal)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: st}, nil
}

func (s *server) Read(ctx context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	k, err := s.kindOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	in, err := props(req.GetInputs())
	if err != nil {
		return nil, err
	}
	state, err := props(req.GetProperties())
	if err != nil {
		return nil, err
	}
	id, out, err := k.read(ctx, req.GetId(), plainMap(in), plainMap(state))
	if err != nil {
		return nil, err
	}
	if id == "" {
		return &pulumirpc.ReadResponse{}, nil
	}
	st, err := plugin.MarshalProperties(merge(state, out), marshal)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.ReadResponse{Id: id, Properties: st, Inputs: req.GetInputs()}, nil
}

func (s *server) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	k, err := s.kindOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	olds, err := props(req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := props(req.GetNews())
	if err != nil {
		return nil, err
	}
	if req.GetPreview() {
		st, err := plugin.MarshalProperties(merge(olds, news), marshal)
		return &pulumirpc.UpdateResponse{Properties: st}, err
	}
	out, err := k.update(ctx, req.GetId(), plainMap(olds), plainMap(news))
	if err != nil {
		return nil, err
	}
	st, err := plugin.MarshalProperties(merge(news, out), marshal)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: st}, nil
}

func (s *server) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	k, err := s.kindOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	in, err := props(req.GetOldInputs())
	if err != nil {
		return nil, err
	}
	state, err := props(req.GetProperties())
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, k.delete(ctx, req.GetId(), plainMap(in), plainMap(state))
}

func (s *server) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// merge is base with over's keys set on top; over's values keep the secret
// marks the kinds give them.
func merge(base, over resource.PropertyMap) resource.PropertyMap {
	out := base.Copy()
	for k, v := range over {
		out[k] = v
	}
	return out
}

// plainMap drops secret wrappers: the kinds read plain values and mark
// their own secret outputs.
func plainMap(pm resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for k, v := range pm {
		for v.IsSecret() {
			v = v.SecretValue().Element
		}
		out[k] = v
	}
	return out
}

// str is a string input, "" when absent or not a string.
func str(pm resource.PropertyMap, key resource.PropertyKey) string {
	if v, ok := pm[key]; ok && v.IsString() {
		return v.StringValue()
	}
	return ""
}

func strList(pm resource.PropertyMap, key resource.PropertyKey) []string {
	v, ok := pm[key]
	if !ok || !v.IsArray() {
		return nil
	}
	var out []string
	for _, e := range v.ArrayValue() {
		if e.IsString() {
			out = append(out, e.StringValue())
		}
	}
	return out
}

func num(pm resource.PropertyMap, key resource.PropertyKey) int {
	if v, ok := pm[key]; ok && v.IsNumber() {
		return int(v.NumberValue())
	}
	return 0
}

func fail(prop, format string, a ...any) *pulumirpc.CheckFailure {
	return &pulumirpc.CheckFailure{Property: prop, Reason: fmt.Sprintf(format, a...)}
}
