package pm_test

import (
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/services/pm"
)

func TestParseConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := pm.ParseConfig(nil, env(nil))
	if err != nil || c.Addr != ":8080" || c.DataDir != "/data" || c.Budget != 1.0 || c.RenewEvery != 0 || c.KDF.MemoryKiB != 46*1024 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c, err = pm.ParseConfig([]string{"--budget", "3"}, env(map[string]string{"UPC_PM_ADDR": "127.0.0.1:9", "UPC_PM_BUDGET": "2", "UPC_PM_BUDGET_RENEW": "720h"}))
	if err != nil || c.Addr != "127.0.0.1:9" || c.Budget != 3 || c.RenewEvery != 720*time.Hour {
		t.Fatalf("env and flags: %+v %v", c, err)
	}
	_, err = pm.ParseConfig([]string{"extra"}, env(map[string]string{"UPC_PM_BUDGET": "lots", "UPC_PM_BUDGET_RENEW": "monthly", "UPC_PM_MAX_BODY_MIB": "0"}))
	for _, want := range []string{"UPC_PM_BUDGET", "renewal", "max body", "unexpected arguments"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad configuration: error %v lacks %q", err, want)
		}
	}
}
