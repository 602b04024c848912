// Package layers holds no code: its test keeps UPC's parts stacked as
// ARCHITECTURE.md draws them, so that no import runs back up a floor.
package layers
