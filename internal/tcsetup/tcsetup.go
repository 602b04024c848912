// Package tcsetup is the one place UPC gives testcontainers-go the settings
// it needs on UPC's machines: no reaper (its image cannot be pulled, as UPC
// pulls no image; everything UPC starts with testcontainers carries its own
// labels and is removed by them) and published ports reached at loopback (in
// a container, seeing /.dockerenv, testcontainers would otherwise dial the
// default gateway, which is not the engine's).
//
// testcontainers-go v0.45.0 takes these settings only from the process
// environment (TESTCONTAINERS_RYUK_DISABLED, TESTCONTAINERS_HOST_OVERRIDE)
// or from ~/.testcontainers.properties, a file of the user's, not the
// project's; the host of published ports has no property at all (tc.host is
// the Docker endpoint). No option of a request, a network or a provider
// carries them: ContainerRequest.SkipReaper is deprecated and ignored, and a
// registered runtime provider, whose PublishedHost would do, is itself
// selected only by that environment or file. So Configure sets the two
// variables, and is the only code of UPC that sets any environment variable
// (a test of this package checks that).
package tcsetup

import (
	"errors"
	"fmt"
	"os"

	"github.com/testcontainers/testcontainers-go"
)

// settings are the variables Configure sets, with their values.
var settings = map[string]string{
	"TESTCONTAINERS_RYUK_DISABLED": "true",
	"TESTCONTAINERS_HOST_OVERRIDE": "127.0.0.1",
}

// Configure sets the settings in the process environment. Call it before the
// first container, network or provider of the process (at the start of
// TestMain, or before a command stands anything up): testcontainers-go
// reads its configuration once per process. It fails when that happened
// already with the reaper on, which would then be started.
func Configure() error {
	for k, v := range settings {
		if err := os.Setenv(k, v); err != nil {
			return fmt.Errorf("testcontainers settings: %w", err)
		}
	}
	if !testcontainers.ReadConfig().RyukDisabled {
		return errors.New("testcontainers settings: testcontainers-go read its configuration before tcsetup.Configure, with its reaper on")
	}
	return nil
}
