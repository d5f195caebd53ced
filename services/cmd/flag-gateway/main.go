// Command flag-gateway runs Dark Tower's flag gateway (see internal/flaggw):
// it watches the flags in etcd and pushes every change to the services
// over WebSocket.
package main

import (
	"os"

	"github.com/darktower/delivery/services/internal/flaggw"
	"github.com/darktower/delivery/services/internal/opskit"
)

func main() {
	os.Exit(opskit.Main(opskit.Program[flaggw.Config]{Name: "flag-gateway", Load: flaggw.LoadConfig, New: flaggw.New}))
}
