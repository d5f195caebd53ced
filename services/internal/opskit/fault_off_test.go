//go:build !canaryfault

package opskit

import (
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
)

// A real build ignores the canaryfault variables, even malformed ones:
// they are not configuration, and the API serves every request at once.
func TestRealBuildHasNoFaultKnob(t *testing.T) {
	for _, env := range []map[string]string{
		{"DT_FAULT_5XX_RATIO": "1", "DT_FAULT_DELAY": "5s"},
		{"DT_FAULT_5XX_RATIO": "lots", "DT_FAULT_DELAY": "forever"},
	} {
		env["DEV_SELF_SIGNED_TLS"] = "true"
		l := envconf.FromMap(env)
		c := LoadCommon(l, "svc")
		if err := l.Err(); err != nil {
			t.Fatalf("%v: %v", env, err)
		}
		if c.fault != (apiFault{}) {
			t.Fatalf("%v: fault %+v", env, c.fault)
		}
	}
	srv, _, _, _ := startServer(t, &testService{healthy: true}, 0)
	api := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	start := time.Now()
	for range 20 {
		if code, _, _ := get(t, api, "https://"+srv.APIAddr().String()+"/v1/items/1"); code != 200 {
			t.Fatalf("API = %d", code)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("20 API requests took %s", took)
	}
}
