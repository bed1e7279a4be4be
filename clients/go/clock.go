package coord

import "time"

var processStart = time.Now()

// monotonicNow is the time since the process started on Go's monotonic clock (never
// stepped by wall-clock changes).
func monotonicNow() time.Duration { return time.Since(processStart) }
