package flow

import (
	"os"
	"testing"
	"time"

	"github.com/darktower/delivery/internal/vulndbtest"
)

// testDB is an empty, current vulnerability DB: the flow tests build
// without findings (the gate itself is tested in pipelines/scan and in
// the CLI's test).
var testDB string

// testDevKeys holds the development signing key the flow tests sign with
// (not the user's own).
var testDevKeys string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "darktower-flow-db-")
	if err != nil {
		panic(err)
	}
	if err := vulndbtest.Write(dir, time.Now()); err != nil {
		panic(err)
	}
	testDB = dir
	testDevKeys = dir + "-keys"
	code := m.Run()
	os.RemoveAll(dir)
	os.RemoveAll(testDevKeys)
	os.Exit(code)
}
