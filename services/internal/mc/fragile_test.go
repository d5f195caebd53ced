package mc

import (
	"context"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/testenv"
)

// The chaosfragile knob: a real build's Redis check recovers after an
// outage; a build with -tags chaosfragile never does (what the chaos
// stage's Redis experiment must catch). Run both ways:
//
//	go test ./internal/mc -run TestRedisCheckAfterAnOutage
//	go test -tags chaosfragile ./internal/mc -run TestRedisCheckAfterAnOutage
func TestRedisCheckAfterAnOutage(t *testing.T) {
	r, err := testenv.StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	kit, _ := testenv.Kit(t, "meeting-controller", "")
	svc := NewService(kit, Config{ID: "mc-0", Region: "local", RedisAddr: r.Addr(), ClientSecret: envconf.NewSecret("x"),
		HeartbeatInterval: time.Second, MHTTL: 30 * time.Second})
	defer svc.Close()
	ctx := context.Background()
	if err := svc.pingRedis(ctx); err != nil {
		t.Fatalf("Redis up: %v", err)
	}
	r.Kill()
	if err := svc.pingRedis(ctx); err == nil {
		t.Fatal("Redis killed, the check still passes")
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	err = svc.pingRedis(ctx)
	for err != nil && time.Now().Before(deadline) && !fragileRedis {
		time.Sleep(100 * time.Millisecond)
		err = svc.pingRedis(ctx)
	}
	switch {
	case !fragileRedis && err != nil:
		t.Fatalf("Redis back, the check did not recover: %v", err)
	case fragileRedis && err == nil:
		t.Fatal("chaosfragile build: the check recovered, the knob does nothing")
	}
	t.Logf("fragileRedis=%v: after the outage the check says %v", fragileRedis, err)
}
