package sign

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/scan"
)

// The vulnerability attestation names what judged the image: Trivy and
// its DB, or govulncheck and the Go vulnerability database's version.
func TestVulnPredicateNamesTheSource(t *testing.T) {
	date := time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC)
	for _, c := range []struct {
		res  *scan.Result
		db   *scan.DBInfo
		want []string
	}{
		{&scan.Result{Source: scan.SourceTrivy, Threshold: "CRITICAL"}, &scan.DBInfo{Version: 2, UpdatedAt: date},
			[]string{`"uri":"pkg:golang/github.com/aquasecurity/trivy"`, `"version":"schema 2, updated 2026-11-05T23:49:57Z"`, `"severity-threshold":"CRITICAL"`}},
		{&scan.Result{Source: scan.SourceGoVulnDB, SourceVersion: scan.GoVulnDBModule + "@" + scan.GoVulnDBVersion, SourceDate: date, Gate: "a reachable vulnerable symbol"}, nil,
			[]string{`"uri":"pkg:golang/golang.org/x/vuln"`, `"uri":"pkg:golang/golang.org/x/vulndb@` + scan.GoVulnDBVersion + `"`,
				`"version":"2026-11-05T23:49:57Z"`, `"gate":"a reachable vulnerable symbol"`}},
	} {
		raw, err := json.Marshal(vulnPredicate(c.res, c.db, "ac-service"))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !strings.Contains(string(raw), w) {
				t.Errorf("%s: predicate lacks %s:\n%s", c.res.Source, w, raw)
			}
		}
	}
}
