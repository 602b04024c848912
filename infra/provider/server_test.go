package main

import (
	"context"
	"slices"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/structpb"
)

// These drive the provider's gRPC methods directly, without an engine; the
// kind and registry calls themselves need Docker and a node image (kind) or
// a registry (push), which the integration tests cover where they exist.

func st(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	pm := resource.NewPropertyMapFromMap(m)
	if pw, ok := m["password"]; ok {
		pm["password"] = resource.MakeSecret(resource.NewStringProperty(pw.(string)))
	}
	s, err := plugin.MarshalProperties(pm, marshal)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	kindURN     = "urn:pulumi:kind::upc::upc:index:KindCluster::kind"
	imagesURN   = "urn:pulumi:kind::upc::upc:index:KindImages::kind-images"
	registryURN = "urn:pulumi:gke::upc::upc:index:RegistryImage::image-pm"
)

func TestProviderCheck(t *testing.T) {
	s := newServer(nil, Version)
	for _, tc := range []struct {
		name, urn string
		in        map[string]any
		want      []string // failing properties
	}{
		{"kind ok", kindURN, map[string]any{"name": "upc", "workers": 1}, nil},
		{"kind bad name and workers", kindURN, map[string]any{"name": "UPC_1", "workers": -1}, []string{"name", "workers"}},
		{"images ok", imagesURN, map[string]any{"cluster": "upc", "images": []any{"upc/pm:v1"}}, nil},
		{"images none", imagesURN, map[string]any{"cluster": "upc", "images": []any{}}, []string{"images"}},
		{"push ok", registryURN, map[string]any{"source": "upc/pm:v1", "target": "us-docker.pkg.dev/p/r/pm:v1"}, nil},
		{"push bad target", registryURN, map[string]any{"source": "", "target": "pm:v1"}, []string{"source", "target"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.Check(context.Background(), &pulumirpc.CheckRequest{Urn: tc.urn, News: st(t, tc.in)})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range resp.GetFailures() {
				got = append(got, f.GetProperty())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("failures on %v, want %v (%v)", got, tc.want, resp.GetFailures())
			}
		})
	}
	if _, err := s.Check(context.Background(), &pulumirpc.CheckRequest{Urn: "urn:pulumi:s::upc::upc:index:Nope::x", News: st(t, nil)}); err == nil {
		t.Error("unknown type accepted")
	}
}

func TestProviderDiff(t *testing.T) {
	s := newServer(nil, Version)
	for _, tc := range []struct {
		name, urn  string
		olds, news map[string]any
		changes    pulumirpc.DiffResponse_DiffChanges
		replaces   []string
	}{
		{"kind same", kindURN, map[string]any{"name": "upc", "workers": 1}, map[string]any{"name": "upc", "workers": 1}, pulumirpc.DiffResponse_DIFF_NONE, nil},
		{"kind more workers", kindURN, map[string]any{"name": "upc", "workers": 1}, map[string]any{"name": "upc", "workers": 2}, pulumirpc.DiffResponse_DIFF_SOME, []string{"workers"}},
		{"images added", imagesURN, map[string]any{"cluster": "upc", "images": []any{"a"}}, map[string]any{"cluster": "upc", "images": []any{"a", "b"}}, pulumirpc.DiffResponse_DIFF_SOME, nil},
		{"push new token", registryURN,
			map[string]any{"source": "s", "target": "h.io/p:1", "password": "old"},
			map[string]any{"source": "s", "target": "h.io/p:1", "password": "new"}, pulumirpc.DiffResponse_DIFF_SOME, nil},
		{"push new tag", registryURN,
			map[string]any{"source": "s", "target": "h.io/p:1", "password": "x"},
			map[string]any{"source": "s", "target": "h.io/p:2", "password": "x"}, pulumirpc.DiffResponse_DIFF_SOME, []string{"target"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.Diff(context.Background(), &pulumirpc.DiffRequest{Urn: tc.urn, OldInputs: st(t, tc.olds), News: st(t, tc.news)})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetChanges() != tc.changes || !slices.Equal(resp.GetReplaces(), tc.replaces) {
				t.Errorf("diff %v replaces %v, want %v %v", resp.GetChanges(), resp.GetReplaces(), tc.changes, tc.replaces)
			}
			if resp.GetDeleteBeforeReplace() != (len(tc.replaces) > 0) {
				t.Errorf("delete before replace %v", resp.GetDeleteBeforeReplace())
			}
		})
	}
}

func TestProviderPreviewCreate(t *testing.T) {
	s := newServer(nil, Version)
	resp, err := s.Create(context.Background(), &pulumirpc.CreateRequest{Urn: kindURN, Properties: st(t, map[string]any{"name": "upc"}), Preview: true})
	if err != nil {
		t.Fatal(err)
	}
	out, err := plugin.UnmarshalProperties(resp.GetProperties(), unmarshal)
	if err != nil {
		t.Fatal(err)
	}
	if !out["kubeconfig"].IsComputed() || !out["nodeAddress"].IsComputed() || out["name"].StringValue() != "upc" {
		t.Errorf("preview outputs %v", out)
	}
}

func TestQualify(t *testing.T) {
	got := qualify([]string{"upc/pm:v1", "gcr.io/x/y:1", "localhost:5000/z:2"})
	want := []string{"docker.io/upc/pm:v1", "gcr.io/x/y:1", "localhost:5000/z:2"}
	if !slices.Equal(got, want) {
		t.Errorf("qualify = %v, want %v", got, want)
	}
}
