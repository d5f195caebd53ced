// Command meeting-controller runs Dark Tower's meeting-controller (see internal/mc).
package main

import (
	"os"

	"github.com/darktower/delivery/services/internal/mc"
	"github.com/darktower/delivery/services/internal/opskit"
)

func main() {
	os.Exit(opskit.Main(opskit.Program[mc.Config]{Name: "meeting-controller", Load: mc.LoadConfig, New: mc.New}))
}
