// Command global-controller runs Dark Tower's global-controller (see internal/gc).
package main

import (
	"os"

	"github.com/darktower/delivery/services/internal/gc"
	"github.com/darktower/delivery/services/internal/opskit"
)

func main() {
	os.Exit(opskit.Main(opskit.Program[gc.Config]{Name: "global-controller", Load: gc.LoadConfig, New: gc.New}))
}
