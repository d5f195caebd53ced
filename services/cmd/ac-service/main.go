// Command ac-service runs Dark Tower's ac-service (see internal/ac);
// `ac-service rotate-key` starts a signing-key rotation.
package main

import (
	"os"

	"github.com/darktower/delivery/services/internal/ac"
	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/opskit"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "rotate-key" {
		os.Exit(ac.RotateKeyMain(envconf.New(), os.Stdout, os.Stderr))
	}
	os.Exit(opskit.Main(opskit.Program[ac.Config]{Name: "ac-service", Load: ac.LoadConfig, New: ac.New}))
}
