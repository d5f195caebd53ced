// Command media-handler runs Dark Tower's media-handler (see internal/mh).
package main

import (
	"os"

	"github.com/darktower/delivery/services/internal/mh"
	"github.com/darktower/delivery/services/internal/opskit"
)

func main() {
	os.Exit(opskit.Main(opskit.Program[mh.Config]{Name: "media-handler", Load: mh.LoadConfig, New: mh.New}))
}
