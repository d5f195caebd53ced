package ac

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The chaosfragile knob: a real build keeps its signing key across a
// restart, and says which one it is in ac_signing_key_info (what the chaos
// stage's ac-service pod-delete counts); a build with -tags chaosfragile
// schedules a new one at every start. Run both ways:
//
//	go test ./internal/ac -run TestSigningKeySurvivesARestart
//	go test -tags chaosfragile ./internal/ac -run TestSigningKeySurvivesARestart
func TestSigningKeySurvivesARestart(t *testing.T) {
	dbURL := newDatabase(t)
	first := startAC(t, dbURL, masterKey)
	first.waitReady(t)
	before := first.svc.currentSigner().KeyID
	want := `ac_signing_key_info{kid="` + before + `"} 1`
	if err := testutil.GatherAndCompare(first.kit.Registry, strings.NewReader(
		"# HELP ac_signing_key_info Always 1; kid is the active signing key's id.\n# TYPE ac_signing_key_info gauge\n"+want+"\n"),
		"ac_signing_key_info"); err != nil {
		t.Fatalf("the metric does not name the active key %s: %v", before, err)
	}
	// The pod is replaced: a new process on the same database.
	second := startAC(t, dbURL, masterKey)
	second.waitReady(t)
	after := second.svc.currentSigner().KeyID
	keys, err := second.svc.store.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case after != before:
		t.Fatalf("the restarted AC signs with %s, not %s", after, before)
	case !fragileForgetsKey && len(keys) != 1:
		t.Fatalf("the restart made %d keys, want the one it had: %+v", len(keys), keys)
	case fragileForgetsKey && len(keys) != 2:
		// The next key is published now and signs after the rotation's
		// lead (the cluster test sees the kid change).
		t.Fatalf("chaosfragile build: %d keys after the restart, want the next one scheduled too", len(keys))
	}
	t.Logf("fragileForgetsKey=%v: kid %s before the restart and after; %d key(s) published", fragileForgetsKey, before, len(keys))
}
