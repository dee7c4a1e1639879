//go:build !race

package gate

// raceEnabled: see race_test.go.
const raceEnabled = false
