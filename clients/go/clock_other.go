//go:build !linux

package coord

import "time"

// now reads the validity clock: Go's monotonic clock where CLOCK_BOOTTIME is unknown.
func now() time.Duration { return monotonicNow() }
