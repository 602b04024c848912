package agent

import (
	"strings"
	"testing"
)

func TestNewEngineOptions(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
		want []string // substrings of the error; none: accepted
	}{
		{"defaults", Options{}, nil},
		{"host mode", Options{NetworkMode: NetworkHost, HostPorts: [2]int{30000, 30009}}, nil},
		{"unknown mode", Options{NetworkMode: "overlay"}, []string{`network mode: "overlay" is not one of bridge, host`}},
		{"inverted range", Options{NetworkMode: NetworkHost, HostPorts: [2]int{30009, 30000}}, []string{"host ports: 30009-30000"}},
		{"privileged ports", Options{NetworkMode: NetworkHost, HostPorts: [2]int{80, 90}}, []string{"host ports: 80-90"}},
		{"every problem at once", Options{NetworkMode: "none", HostPorts: [2]int{0, 70000}, PidsLimit: -1},
			[]string{"network mode", "host ports", "pids limit"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := NewEngine(nil, c.opts, nil)
			if len(c.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if e.opts.NetworkMode == "" || e.opts.HostPorts[0] == 0 {
					t.Errorf("defaults not filled: %+v", e.opts)
				}
				return
			}
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want it to say %q", err, w)
				}
			}
		})
	}
}
