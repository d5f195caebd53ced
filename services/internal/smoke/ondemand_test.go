package smoke

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The rollout gate judges the canary's own service: answered calls to
// global-controller do not open the gate of meeting-controller's canary.
func TestGatePerCanaryTarget(t *testing.T) {
	l := NewLoad(Config{}, 100*time.Millisecond, prometheus.NewRegistry())
	l.OnDemand = true
	if err := l.Flowing("global-controller"); err == nil || !strings.Contains(err.Error(), "not started") {
		t.Fatalf("before a start: %v", err)
	}
	until := l.Start(time.Minute)
	if again := l.Start(time.Second); !again.Equal(until) {
		t.Errorf("a shorter start moved the end from %s to %s", until, again)
	}
	l.count("global-controller", nil, io.Discard)
	if err := l.Flowing("global-controller"); err != nil {
		t.Errorf("global-controller answered: %v", err)
	}
	if err := l.Flowing("meeting-controller"); err == nil || !strings.Contains(err.Error(), "meeting-controller") {
		t.Errorf("meeting-controller never answered, gate open: %v", err)
	}
	if err := l.Flowing("media-handler"); err != nil {
		t.Errorf("a canary the rounds do not call is judged on any answer: %v", err)
	}
	time.Sleep(350 * time.Millisecond) // more than three rounds
	if err := l.Flowing("global-controller"); err == nil || !strings.Contains(err.Error(), "answered for") {
		t.Errorf("no answer for three rounds, gate open: %v", err)
	}
}
