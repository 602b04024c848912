// Package version holds the UPC version, set at link time by the Makefile
// (-X github.com/e-mission/upc/internal/version.Version=...).
package version

// Version is the release or development version of this build.
var Version = "dev"
