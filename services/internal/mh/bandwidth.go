package mh

import (
	"sync"
	"time"
)

// BandwidthState is the ADR-0012 operational state derived from utilisation.
type BandwidthState int

const (
	// StateNormal: below the warning threshold.
	StateNormal BandwidthState = iota
	// StateWarning: at or above 70%: emit the metric, prepare to scale.
	StateWarning
	// StateCritical: at or above 80%: reject new participants.
	StateCritical
)

func (s BandwidthState) String() string {
	return [...]string{"normal", "warning", "critical"}[s]
}

// Thresholds from ADR-0012's operational thresholds table.
const (
	WarningUtilization   = 0.70
	HardLimitUtilization = 0.80
)

// Thresholds are the ratios the states start at. The flags
// mh.bandwidth.warning_ratio and mh.admission.hard_limit_ratio set them
// live; their static defaults are the ADR's (DefaultThresholds).
type Thresholds struct {
	Warning   float64
	HardLimit float64
}

// DefaultThresholds are ADR-0012's.
var DefaultThresholds = Thresholds{Warning: WarningUtilization, HardLimit: HardLimitUtilization}

// State classifies a utilisation ratio.
func (th Thresholds) State(utilization float64) BandwidthState {
	switch {
	case utilization >= th.HardLimit:
		return StateCritical
	case utilization >= th.Warning:
		return StateWarning
	default:
		return StateNormal
	}
}

// Admits reports whether a new participant (and so a new session) may
// join at this utilisation.
func (th Thresholds) Admits(utilization float64) bool { return th.State(utilization) != StateCritical }

// StateFor classifies a utilisation ratio at the ADR's thresholds.
func StateFor(utilization float64) BandwidthState { return DefaultThresholds.State(utilization) }

// AdmitsNewParticipants reports whether a new participant (and so a new
// session) may join at this utilisation, at the ADR's thresholds.
func AdmitsNewParticipants(utilization float64) bool { return DefaultThresholds.Admits(utilization) }

// Meter measures throughput over a sliding window of one-second buckets and
// reports it as a fraction of the configured capacity.
type Meter struct {
	capacityBitsPerSec float64
	window             int // seconds

	mu      sync.Mutex
	buckets []uint64 // bytes per second, ring indexed by unix second
	stamps  []int64
}

// NewMeter measures against capacity over window (rounded to whole seconds, ≥ 1).
func NewMeter(capacityBitsPerSec float64, window time.Duration) *Meter {
	n := max(int(window/time.Second), 1)
	return &Meter{capacityBitsPerSec: capacityBitsPerSec, window: n, buckets: make([]uint64, n), stamps: make([]int64, n)}
}

// Add records bytes moved at time now.
func (m *Meter) Add(now time.Time, bytes int) {
	sec := now.Unix()
	i := int(sec % int64(m.window))
	m.mu.Lock()
	if m.stamps[i] != sec {
		m.stamps[i], m.buckets[i] = sec, 0
	}
	m.buckets[i] += uint64(bytes)
	m.mu.Unlock()
}

// Utilization returns bits per second over the window / capacity.
func (m *Meter) Utilization(now time.Time) float64 {
	sec := now.Unix()
	var total uint64
	m.mu.Lock()
	for i, st := range m.stamps {
		if st > sec-int64(m.window) && st <= sec {
			total += m.buckets[i]
		}
	}
	m.mu.Unlock()
	return float64(total*8) / float64(m.window) / m.capacityBitsPerSec
}
