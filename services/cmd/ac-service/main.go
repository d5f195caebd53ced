// Command ac-service runs Dark Tower's ac-service (see internal/ac).
package main

import (
	"os"

	"github.com/darktower/delivery/services/internal/ac"
	"github.com/darktower/delivery/services/internal/opskit"
)

func main() {
	os.Exit(opskit.Main(opskit.Program[ac.Config]{Name: "ac-service", Load: ac.LoadConfig, New: ac.New}))
}
