package gc

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

// liveMCs is gc_meeting_controllers_live: the meeting controllers whose
// registration is live (heartbeat within GC_MC_TTL), read from the
// registry at scrape time. The chaos stage compares it with the MCs
// Prometheus sees up: an MC that restarts must register again. A scrape
// during a database outage omits the series rather than report a count
// it could not read.
type liveMCs struct {
	s    *Service
	desc *prometheus.Desc
}

func newLiveMCs(s *Service) *liveMCs {
	return &liveMCs{s: s, desc: prometheus.NewDesc("gc_meeting_controllers_live",
		"Meeting controllers registered with a heartbeat within gc.registry.mc_ttl_seconds (GC_MC_TTL while the flag is at its static default; absent when the registry cannot be read).", nil, nil)}
}

func (l *liveMCs) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

func (l *liveMCs) Collect(ch chan<- prometheus.Metric) {
	if l.s.migrated.Last().IsZero() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), dbRequestTimeout)
	defer cancel()
	var n int
	if err := l.s.pool.QueryRow(ctx, `SELECT count(*) FROM meeting_controllers
		WHERE last_heartbeat > now() - make_interval(secs => $1)`, l.s.MCTTL().Seconds()).Scan(&n); err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(n))
}
