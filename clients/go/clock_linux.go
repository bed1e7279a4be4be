//go:build linux

package coord

import (
	"time"

	"golang.org/x/sys/unix"
)

// now reads the validity clock: CLOCK_BOOTTIME, monotonic and counting time the machine
// was suspended (CLOCK_MONOTONIC stops during a suspend, so a resumed laptop or VM would
// believe in a lease the cluster expired meanwhile). Comparable only with itself.
func now() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return monotonicNow()
	}
	return time.Duration(ts.Nano())
}
